"""AI schema mapping: source columns -> a target schema with calibrated confidence.

Example::

    from eai_ray.processing.mapping import map_columns
    map_columns([{"name": "custNm", "samples": ["Ann Lee"]}], [{"name": "customer_name", "type": "string"}])
"""
from eai_ray.processing.mapping.matcher import map_columns

__all__ = ["map_columns"]
