"""HTTP service and web page: `housenum serve`; see docs/serving.md."""
