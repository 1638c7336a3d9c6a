"""Postroom: self-hosted newsletters and transactional email."""
