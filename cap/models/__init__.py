"""Backends behind one interface (:class:`cap.models.base.Backbone`) plus the residual adapters."""
