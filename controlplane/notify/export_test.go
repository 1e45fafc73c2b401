package notify

// Prune runs one round of pruning now (the service does every 10
// minutes), returning how many events it deleted.
func (s *Service) Prune() int { return s.prune() }
