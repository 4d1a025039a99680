"""The wire protocol, sans-I/O: messages and their encoding; the device's side of a
connection."""
