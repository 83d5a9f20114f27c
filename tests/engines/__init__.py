"""Tests that drive real container engines (podman, containerd, Docker, the CRI) against the
runtime under test; see conftest.py."""
