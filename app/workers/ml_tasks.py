"""``ml`` queue tasks: style learning, apply and .cube export (filled in by the styles feature)."""
