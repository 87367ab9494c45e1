"""The csv_stats example tool. A package only so that type checkers tell the tool.py
files of the examples apart; the engine loads tool.py by its path."""
