"""What every training loop shares: schedules, class balance, the learning-rate range test."""
