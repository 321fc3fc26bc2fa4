"""Declaring functions: the `@function`, `@executor` and `@partitioned` decorators."""
