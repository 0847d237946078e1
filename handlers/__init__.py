"""Provider and sink adapters. Each subpackage keeps an explicit, hand-written registry."""
