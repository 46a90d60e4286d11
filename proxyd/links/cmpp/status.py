"""What CMPP's answers mean to proxyd's clients: Result -> SMPP status, Stat -> message state.

`submit_status(result)`: the Result of a CMPP_SUBMIT_RESP as the SMPP status the gate (and
the client) sees. 8 (flow control) is ESME_RTHROTTLED, so the gate tries the part on another
link; every other refusal is final and refunded.

`report_state(stat)`: a status report's Stat as (SMPP message_state, stat word, err). The
final states of the specification map to their SMPP namesakes; the gateway's own codes
("MA:xxxx", "MB:xxxx", "CB:xxxx", "DB:xxxx", "IA:xxxx", ...) are undeliverable (5, UNDELIV);
`err` keeps the operator's Stat as sent ("000" for DELIVRD).

`deliver_result(status)`: the Result of our CMPP_DELIVER_RESP for the status the delivery
side acknowledged with (0 stored; ESME_RX_T_APPN / ESME_RTHROTTLED: 8, "flow control", so
the gateway sends it again; anything else 9).
"""
from __future__ import annotations

from proxyd.smpp import constants as C

_S = C.STATUS

SUBMIT_STATUS: dict[int, int] = {
    0: 0,
    1: _S["ESME_RSUBMITFAIL"],     # message structure error
    2: _S["ESME_RINVCMDID"],       # command id error
    3: _S["ESME_RSUBMITFAIL"],     # duplicate sequence
    4: _S["ESME_RINVMSGLEN"],      # message length error
    5: _S["ESME_RSUBMITFAIL"],     # fee code error
    6: _S["ESME_RINVMSGLEN"],      # over the maximum length
    7: _S["ESME_RINVSERTYP"],      # service id error
    8: _S["ESME_RTHROTTLED"],      # flow control
    9: _S["ESME_RSUBMITFAIL"],     # this gateway does not serve the charged number
    10: _S["ESME_RINVSRCADR"],     # Src_Id error
    11: _S["ESME_RSUBMITFAIL"],    # Msg_src error
    12: _S["ESME_RSUBMITFAIL"],    # Fee_terminal_Id error
    13: _S["ESME_RINVDSTADR"],     # Dest_terminal_Id error
}


RESULT_NAMES = {1: "message structure error", 2: "command id error", 3: "duplicate sequence",
                4: "message length error", 5: "fee code error", 6: "over the maximum length",
                7: "Service_Id error", 8: "flow control", 9: "charged number not served here",
                10: "Src_Id error", 11: "Msg_src error", 12: "Fee_terminal_Id error",
                13: "Dest_terminal_Id error"}


def result_name(result: int) -> str:
    return "Result %d (%s)" % (result, RESULT_NAMES.get(result, "other error"))


def submit_status(result: int) -> int:
    return SUBMIT_STATUS.get(result, _S["ESME_RSUBMITFAIL"])


# Stat word -> SMPP message_state (SMPP 3.4 section 5.2.28)
STATES = {"DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5, "ACCEPTD": 6,
          "UNKNOWN": 7, "REJECTD": 8}
STATE_WORDS = {v: k for k, v in STATES.items()}


def report_state(stat: bytes) -> tuple[int, str, str]:
    """(message_state, stat word for the receipt text, err) of a CMPP Stat."""
    s = stat.decode("latin-1").strip()
    state = STATES.get(s.upper())
    if state is None:
        state = 5                   # a gateway's own code: not delivered
    word = STATE_WORDS[state]
    err = "000" if state == 2 else (s.replace(" ", "_") or "UNKNOWN")
    return state, word, err


def deliver_result(status: int) -> int:
    if status == 0:
        return 0
    if status in (_S["ESME_RX_T_APPN"], _S["ESME_RTHROTTLED"], _S["ESME_RMSGQFUL"]):
        return 8
    return 9
