"""Where images come from (files, folders, URLs, stdin) and how they become pixels."""
