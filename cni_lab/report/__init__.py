"""Turning results into output: rich for people, JSON and JUnit for machines. Only the CLI prints."""
