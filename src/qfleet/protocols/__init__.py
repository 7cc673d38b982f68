"""Wire protocols of backends that qfleet speaks itself (no vendor SDK).

``p2300``: QuTech's compute-runtime schema (2200 job processor <-> 2300 control software).
"""
