"""Humanity's Last Exam with tools."""
