package ban

// tracked is the number of sources the list holds.
func (l *List) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
