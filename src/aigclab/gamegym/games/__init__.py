"""The embedded default dataset: original self-playing pygame games (``<id>.py.txt``) and ``index.json``."""
