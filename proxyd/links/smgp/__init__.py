"""SMGP 3.0 (China Telecom): the codec (`pdu`), and the upstream link built on it."""
