"""pSp-style w/q encoders, encoder training and PTI inversion."""
