"""The engine: anchor pairs, the candidates derived from them, and every update kept exact and crash-safe.

``Engine`` (engine/engine.py) is the one object that holds a store's state; the features above call
its methods and never reach into the collections themselves.
"""
