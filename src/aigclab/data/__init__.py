"""Embedded data: the real photographs, the generator zoo and the AIGC-Mini benchmark."""
