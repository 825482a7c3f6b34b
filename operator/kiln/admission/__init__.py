"""Admission: the rules (handlers), which requests reach them (configuration), the server that answers."""
