"""What was inspected: the recent inspections of each product (in memory today)."""
