"""Typed records: encoder identities, ASIF parameters, the store's config and journal, and results.

Everything here is a pydantic model: validated on the way in, serialised one way on the way out.
"""
