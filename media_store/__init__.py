"""File uploads and downloads (see issue 7)."""
