"""Reports of finished runs: loading run directories, statistics, the leaderboard table, its
renderings (markdown, rich, CSV, HTML), the ROC figure, and writing them to files."""
