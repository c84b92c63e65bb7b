"""Shared helpers of the test suite: deadlines, free ports, a real cloud, enrolled Boxes."""
