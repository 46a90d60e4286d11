"""SMPP 3.4 numbers in one place: command ids, command statuses, TLV tags.

Every status code proxyd can answer is in STATUS (name -> value) with a human text in
STATUS_TEXT; the README's error table is generated from the same facts.
"""
from __future__ import annotations

# --- command ids -------------------------------------------------------------------------
GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_RECEIVER_RESP = 0x80000001
BIND_TRANSMITTER = 0x00000002
BIND_TRANSMITTER_RESP = 0x80000002
QUERY_SM = 0x00000003
QUERY_SM_RESP = 0x80000003
SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
DELIVER_SM = 0x00000005
DELIVER_SM_RESP = 0x80000005
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
REPLACE_SM = 0x00000007
REPLACE_SM_RESP = 0x80000007
CANCEL_SM = 0x00000008
CANCEL_SM_RESP = 0x80000008
BIND_TRANSCEIVER = 0x00000009
BIND_TRANSCEIVER_RESP = 0x80000009
OUTBIND = 0x0000000B
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015
SUBMIT_MULTI = 0x00000021
SUBMIT_MULTI_RESP = 0x80000021
ALERT_NOTIFICATION = 0x00000102
DATA_SM = 0x00000103
DATA_SM_RESP = 0x80000103

COMMAND_NAMES: dict[int, str] = {
    v: k.lower() for k, v in dict(globals()).items()
    if k.isupper() and isinstance(v, int) and k not in ("COMMAND_NAMES",)
}

RESP_BIT = 0x80000000
BIND_COMMANDS = frozenset((BIND_RECEIVER, BIND_TRANSMITTER, BIND_TRANSCEIVER))

# --- command statuses ----------------------------------------------------------------------
STATUS: dict[str, int] = {
    "ESME_ROK": 0x00000000,
    "ESME_RINVMSGLEN": 0x00000001,
    "ESME_RINVCMDLEN": 0x00000002,
    "ESME_RINVCMDID": 0x00000003,
    "ESME_RINVBNDSTS": 0x00000004,
    "ESME_RALYBND": 0x00000005,
    "ESME_RINVPRTFLG": 0x00000006,
    "ESME_RINVREGDLVFLG": 0x00000007,
    "ESME_RSYSERR": 0x00000008,
    "ESME_RINVSRCADR": 0x0000000A,
    "ESME_RINVDSTADR": 0x0000000B,
    "ESME_RINVMSGID": 0x0000000C,
    "ESME_RBINDFAIL": 0x0000000D,
    "ESME_RINVPASWD": 0x0000000E,
    "ESME_RINVSYSID": 0x0000000F,
    "ESME_RCANCELFAIL": 0x00000011,
    "ESME_RREPLACEFAIL": 0x00000013,
    "ESME_RMSGQFUL": 0x00000014,
    "ESME_RINVSERTYP": 0x00000015,
    "ESME_RINVNUMDESTS": 0x00000033,
    "ESME_RINVDLNAME": 0x00000034,
    "ESME_RINVDESTFLAG": 0x00000040,
    "ESME_RINVSUBREP": 0x00000042,
    "ESME_RINVESMCLASS": 0x00000043,
    "ESME_RCNTSUBDL": 0x00000044,
    "ESME_RSUBMITFAIL": 0x00000045,
    "ESME_RINVSRCTON": 0x00000048,
    "ESME_RINVSRCNPI": 0x00000049,
    "ESME_RINVDSTTON": 0x00000050,
    "ESME_RINVDSTNPI": 0x00000051,
    "ESME_RINVSYSTYP": 0x00000053,
    "ESME_RINVREPFLAG": 0x00000054,
    "ESME_RINVNUMMSGS": 0x00000055,
    "ESME_RTHROTTLED": 0x00000058,
    "ESME_RINVSCHED": 0x00000061,
    "ESME_RINVEXPIRY": 0x00000062,
    "ESME_RINVDFTMSGID": 0x00000063,
    "ESME_RX_T_APPN": 0x00000064,
    "ESME_RX_P_APPN": 0x00000065,
    "ESME_RX_R_APPN": 0x00000066,
    "ESME_RQUERYFAIL": 0x00000067,
    "ESME_RINVOPTPARSTREAM": 0x000000C0,
    "ESME_ROPTPARNOTALLWD": 0x000000C1,
    "ESME_RINVPARLEN": 0x000000C2,
    "ESME_RMISSINGOPTPARAM": 0x000000C3,
    "ESME_RINVOPTPARAMVAL": 0x000000C4,
    "ESME_RDELIVERYFAILURE": 0x000000FE,
    "ESME_RUNKNOWNERR": 0x000000FF,
    # vendor range (0x400-0x4FF): what SMPP has no code for
    "PROXYD_RCONTENT": 0x00000400,
    "PROXYD_RNOBALANCE": 0x00000401,
    "PROXYD_RDUPPART": 0x00000402,
    "PROXYD_RMIXEDDCS": 0x00000403,
}
STATUS_NAME: dict[int, str] = {v: k for k, v in STATUS.items()}

STATUS_TEXT: dict[int, str] = {
    0x00: "OK",
    0x01: "message length invalid",
    0x02: "command length invalid",
    0x03: "invalid command id",
    0x04: "incorrect bind status for this command",
    0x05: "already bound",
    0x08: "system error (store or internal failure)",
    0x0A: "source address not allowed or not displayable",
    0x0B: "destination address invalid, not routable or opted out",
    0x0C: "message id invalid",
    0x0D: "bind failed (too many binds for this account)",
    0x0E: "invalid password",
    0x0F: "invalid system_id",
    0x11: "cancel failed",
    0x13: "replace failed",
    0x14: "no upstream capacity now, try later",
    0x33: "invalid number of destinations",
    0x43: "invalid esm_class",
    0x45: "submit failed",
    0x58: "throttled: over the account's rate",
    0x62: "invalid validity period",
    0x67: "query failed",
    0xC0: "invalid optional parameter stream",
    0xC2: "invalid parameter length",
    0xFE: "delivery failure",
    0xFF: "unknown error",
    0x400: "content refused by the content filter",
    0x401: "insufficient prepaid balance",
    0x402: "duplicate part, or a total that differs from the other parts of the long message",
    0x403: "a part of a long message in another data_coding than the other parts",
}


def status_name(status: int) -> str:
    return STATUS_NAME.get(status, "0x%08X" % status)


# --- TLV tags (SMPP 3.4 section 5.3.2) -------------------------------------------------------
TLV: dict[str, int] = {
    "dest_addr_subunit": 0x0005,
    "dest_network_type": 0x0006,
    "dest_bearer_type": 0x0007,
    "dest_telematics_id": 0x0008,
    "source_addr_subunit": 0x000D,
    "source_network_type": 0x000E,
    "source_bearer_type": 0x000F,
    "source_telematics_id": 0x0010,
    "qos_time_to_live": 0x0017,
    "payload_type": 0x0019,
    "additional_status_info_text": 0x001D,
    "receipted_message_id": 0x001E,
    "ms_msg_wait_facilities": 0x0030,
    "privacy_indicator": 0x0201,
    "source_subaddress": 0x0202,
    "dest_subaddress": 0x0203,
    "user_message_reference": 0x0204,
    "user_response_code": 0x0205,
    "source_port": 0x020A,
    "destination_port": 0x020B,
    "sar_msg_ref_num": 0x020C,
    "language_indicator": 0x020D,
    "sar_total_segments": 0x020E,
    "sar_segment_seqnum": 0x020F,
    "sc_interface_version": 0x0210,
    "callback_num_pres_ind": 0x0302,
    "callback_num_atag": 0x0303,
    "number_of_messages": 0x0304,
    "callback_num": 0x0381,
    "dpf_result": 0x0420,
    "set_dpf": 0x0421,
    "ms_availability_status": 0x0422,
    "network_error_code": 0x0423,
    "message_payload": 0x0424,
    "delivery_failure_reason": 0x0425,
    "more_messages_to_send": 0x0426,
    "message_state": 0x0427,
    "ussd_service_op": 0x0501,
    "display_time": 0x1201,
    "sms_signal": 0x1203,
    "ms_validity": 0x1204,
    "alert_on_message_delivery": 0x130C,
    "its_reply_type": 0x1380,
    "its_session_info": 0x1383,
}
TLV_NAME: dict[int, str] = {v: k for k, v in TLV.items()}

TAG_RECEIPTED_MESSAGE_ID = 0x001E
TAG_SAR_MSG_REF_NUM = 0x020C
TAG_SAR_TOTAL_SEGMENTS = 0x020E
TAG_SAR_SEGMENT_SEQNUM = 0x020F
TAG_MESSAGE_PAYLOAD = 0x0424
TAG_MESSAGE_STATE = 0x0427
TAG_NETWORK_ERROR_CODE = 0x0423
TAG_SC_INTERFACE_VERSION = 0x0210

# esm_class bits
ESM_UDHI = 0x40
ESM_RECEIPT_MASK = 0x3C  # message type bits 2-5: 0x04 SMSC delivery receipt, ...
ESM_DELIVERY_RECEIPT = 0x04

# data_coding values proxyd decodes
DC_DEFAULT = 0x00
DC_IA5 = 0x01
DC_BINARY_2 = 0x02
DC_LATIN1 = 0x03
DC_BINARY = 0x04
DC_UCS2 = 0x08

MAX_SEQUENCE = 0x7FFFFFFF
