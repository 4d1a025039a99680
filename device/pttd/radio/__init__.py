"""The device (the radio): its state machine, daemon, link, store and hardware adapters."""
