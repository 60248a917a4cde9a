"""Collection: sample initial programs, judge them, have a teacher explain and fix the wrong ones (``python -m selfdebug.collect``)."""
