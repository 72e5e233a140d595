"""The host over SSH, shell quoting, and every command the tool sends."""
