"""CMPP 2.0 and 3.0 (China Mobile's ISMG): `codec` (sans-IO frames and PDUs, Msg_Id,
authenticators), `link` (the upstream link), `status` (Stat / Result -> SMPP)."""
