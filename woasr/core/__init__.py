"""Sans-I/O streaming core: audio in, committed and partial words out.

Nothing here opens a socket, starts a thread, sleeps or reads a clock; time is
counted in samples of 16 kHz mono audio.
"""
