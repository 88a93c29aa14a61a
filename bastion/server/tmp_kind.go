package server

// auditKindStatus is audit.KindStatus (being added to the audit package).
const auditKindStatus = "status"
