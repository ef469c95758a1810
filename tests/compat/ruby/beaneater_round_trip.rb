# Round trips with the beaneater gem (Debian ruby-beaneater) against a beanstalk server.
# Usage: ruby beaneater_round_trip.rb HOST:PORT
# Exits 0 and prints "ALL OK" on success; prints the failed check and exits 1 otherwise.
require "beaneater"

def check(what, got, want)
  return if got == want
  warn "FAILED #{what}: got #{got.inspect}, want #{want.inspect}"
  exit 1
end

bs = Beaneater.new(ARGV.fetch(0))
tube = bs.tubes["rt"]

id_a = tube.put("alpha", pri: 5, ttr: 60)[:id].to_i
id_b = tube.put("beta", pri: 1, ttr: 60)[:id].to_i
id_d = tube.put("later", delay: 100)[:id].to_i
check("ids", [id_a, id_b, id_d], [1, 2, 3])
check("used", bs.tubes.used.name, "rt")
check("peek ready", tube.peek(:ready).id.to_i, id_b)
check("peek delayed", tube.peek(:delayed).id.to_i, id_d)
check("peek buried", tube.peek(:buried), nil)

bs.tubes.watch!("rt")
check("watched", bs.tubes.watched.map(&:name), ["rt"])
job = bs.tubes.reserve(1)
check("reserve", [job.id.to_i, job.body], [id_b, "beta"])
check("stats-job state", job.stats.state, "reserved")
check("stats-job tube", job.stats.tube, "rt")
check("stats-job pri", job.stats.pri, 1)
job.touch
job.release(pri: 7)
check("released state", bs.jobs.find(id_b).stats.state, "ready")

job = bs.tubes.reserve(1)
check("reserve by pri", job.id.to_i, id_a)
job.bury(pri: 3)
check("peek buried after bury", tube.peek(:buried).id.to_i, id_a)
check("kick", tube.kick(10)[:id].to_i, 1)
job = bs.tubes.reserve(1)
check("reserve kicked", [job.id.to_i, job.body, job.stats.kicks], [id_a, "alpha", 1])
job.delete
check("deleted", bs.jobs.find(id_a), nil)

bs.jobs.find(id_d).kick
check("kick-job", bs.jobs.find(id_d).stats.state, "ready")

stats = tube.stats
check("stats-tube name", stats.name, "rt")
check("stats-tube ready", stats.current_jobs_ready, 2)
check("stats-tube total", stats.total_jobs, 3)

tube.pause(100)
check("stats-tube pause", tube.stats.pause, 100)
begin
  bs.tubes.reserve(0)
  check("reserve on paused tube", "RESERVED", "TIMED_OUT")
rescue Beaneater::TimedOutError
end
tube.pause(0)
job = bs.tubes.reserve(2)
check("reserve after unpause", job.id.to_i, id_b)
job.delete

check("list-tubes", bs.tubes.all.map(&:name).sort, ["default", "rt"])
s = bs.stats
check("stats cmd-put", s.cmd_put, 3)
check("stats total-jobs", s.total_jobs, 3)
check("stats current-jobs-ready", s.current_jobs_ready, 1)
check("stats draining", s.draining, false)
check("stats current-tubes", s.current_tubes, 2)
bs.close
puts "ALL OK"
