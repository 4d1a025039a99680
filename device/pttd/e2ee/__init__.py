"""End-to-end encryption of voice: SFrame per audio packet, room keys wrapped by a key authority."""
