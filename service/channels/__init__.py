"""Delivery channels: one small module per transport behind :class:`base.Transport`."""
