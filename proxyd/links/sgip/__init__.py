"""SGIP 1.2 (China Unicom): the codec (`pdu`), and the upstream link built on it."""
