"""Sans-I/O protocol cores Wirelab owns: bytes or events in, bytes or events out, no clock, no sockets."""
