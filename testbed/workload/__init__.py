"""The paper's workload: CityPulse streams and IFTM anomaly detectors."""
