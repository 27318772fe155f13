"""Sans-I/O tests of the protocol core, named after the sections of RFC 6455 and RFC 7692."""
