"""Who is calling and what they may do: virtual keys, access rules (and, next, limits)."""
