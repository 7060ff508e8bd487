"""Security: the quantization-conditioned backdoor (QB), its evaluation through real toolchains, defences."""
