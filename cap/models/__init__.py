"""Backends behind one interface (:class:`cap.models.backbone.Backbone`) plus the residual adapters."""
