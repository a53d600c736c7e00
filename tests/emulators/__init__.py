"""Loopback emulators of the services voxtune talks to, so tests run the real client code."""
