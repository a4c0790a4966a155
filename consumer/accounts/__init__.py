"""Many LivePerson accounts behind one daemon: credentials per account, isolation, a registry."""
