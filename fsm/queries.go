package fsm

// Read-only questions about jobs that more than one reader asks. Nothing
// here changes state; callers pass copies obtained from FSM.Jobs or FSM.Job.

// HoldsSlots tells whether a job in this state occupies its task slots: it
// has a placement whose subtasks have not all ended.
func HoldsSlots(state string) bool {
	return state == JobRunning || state == JobFailing || state == JobCancelling
}

// SlotNodes returns the node of each slot of a placement. With slot
// sharing a job needs max(parallelism) slots, and slot i hosts subtask i of
// every vertex, so the longest vertex placement names every slot.
func SlotNodes(placement map[string][]string) []string {
	var slots []string
	for _, nodes := range placement {
		if len(nodes) > len(slots) {
			slots = nodes
		}
	}
	return append([]string(nil), slots...)
}

// SlotsInUse counts, per node, the slots held by the jobs that hold slots.
func SlotsInUse(jobs []*Job) map[string]int {
	used := map[string]int{}
	for _, j := range jobs {
		if !HoldsSlots(j.State) {
			continue
		}
		for _, n := range SlotNodes(j.Placement) {
			used[n]++
		}
	}
	return used
}

// TasksOn counts the subtasks of jobs holding slots that are placed on
// node (Flink's assignedTasks of a task manager).
func TasksOn(jobs []*Job, node string) int {
	n := 0
	for _, j := range jobs {
		if !HoldsSlots(j.State) {
			continue
		}
		for _, nodes := range j.Placement {
			for _, at := range nodes {
				if at == node {
					n++
				}
			}
		}
	}
	return n
}
