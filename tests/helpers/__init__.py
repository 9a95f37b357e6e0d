"""Test helpers (not tests): one server launcher, one wait helper, one image factory, the fake detector, and the
loopback peers and deployment files the tests read. Test modules import from here, never from each other."""
