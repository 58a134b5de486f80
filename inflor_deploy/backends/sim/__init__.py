"""Simulators: float IR execution and the bit-exact fixed-point simulator (the oracle)."""
