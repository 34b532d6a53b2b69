"""The compute service layer: Nova's ``compute/api.py`` checks in front of the workflows."""
