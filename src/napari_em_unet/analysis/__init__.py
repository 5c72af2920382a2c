"""Objects in a labels volume: measurements and proofreading edits (numpy only, no Qt)."""
