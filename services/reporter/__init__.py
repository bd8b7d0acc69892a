"""Daily e-mail report of the previous day's delivery statistics per mailing."""
