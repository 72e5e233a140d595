import { Controller, Get, Query } from '@nestjs/common';
import { PrismaService } from './prisma.service.js';

const DIMENSIONS = 1536;

@Controller('lessons')
export class LessonsController {
  constructor(private readonly prisma: PrismaService) {}

  @Get()
  list() {
    return this.prisma.lesson.findMany({
      select: { id: true, title: true, durationMinutes: true },
      orderBy: { id: 'asc' },
      take: 100,
    });
  }

  // Nearest lessons to a vector (pgvector's `<->`, L2 distance): `?vector=0.1,0.2,...` or,
  // without one, the zero vector. Embeddings are Unsupported in Prisma's schema: raw SQL.
  @Get('similar')
  async similar(@Query('vector') vector?: string, @Query('limit') limit?: string) {
    const values = vector ? vector.split(',').map(Number) : [];
    const padded = Array.from({ length: DIMENSIONS }, (_, i) =>
      Number.isFinite(values[i]) ? values[i] : 0);
    const literal = `[${padded.join(',')}]`;
    const take = Math.min(Math.max(Number(limit) || 5, 1), 50);
    const rows = await this.prisma.$queryRaw<
      { id: number; title: string; durationMinutes: number; distance: number }[]>`
      SELECT id, title, duration_minutes AS "durationMinutes", (embedding <-> ${literal}::vector(1536))::float8 AS distance
      FROM lessons
      WHERE embedding IS NOT NULL
      ORDER BY embedding <-> ${literal}::vector(1536)
      LIMIT ${take}`;
    return rows;
  }
}
