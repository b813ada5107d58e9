"""Alarm notifications: real-time and daily summary, by e-mail (SMTP) and webhook."""
