"""The development identity provider behind `texas dev`: tokens, keys, grants and its page."""
