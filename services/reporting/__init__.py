"""Reporting: the AEF read model built from the services' feeds, submissions, exports, the public register."""
